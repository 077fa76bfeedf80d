"""BasicSR's SRGANModel with MR validation (registered as ``MRSRGANModel``)."""
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils.registry import MODEL_REGISTRY

from .mr_validation import MRValidationMixin


@MODEL_REGISTRY.register()
class MRSRGANModel(MRValidationMixin, SRGANModel):
    """SRGANModel whose validation measures and saves float MR images (see :class:`MRValidationMixin`)."""
