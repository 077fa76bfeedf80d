"""Applications, above the plugin core and MR I/O: preparation (:mod:`.prepare`), inference (:mod:`.infer`),
evaluation (:mod:`.evaluation`), the zoo benchmark (:mod:`.benchmark`) and the budgeted reproduction
(:mod:`.reproduce`), through-plane SR (:mod:`.through_plane`, :mod:`.through_plane_evaluation`), the self-check
(:mod:`.selfcheck`) and tiny training runs (:mod:`.tinyrun`). They never import :mod:`mrsr_plugin.cli`."""
