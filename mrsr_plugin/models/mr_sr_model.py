"""BasicSR's SRModel with MR validation (registered as ``MRSRModel``)."""
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY

from .mr_validation import MRValidationMixin


@MODEL_REGISTRY.register()
class MRSRModel(MRValidationMixin, SRModel):
    """SRModel whose validation measures and saves float MR images (see :class:`MRValidationMixin`)."""
