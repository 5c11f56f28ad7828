"""transformers integration: `patch(model, config, **options)` runs a VLM's long prefills with
modality-aware sparse attention (layouts derived from the model inputs), `unpatch(model)` undoes it."""

from .context import explicit_layouts
from .families import FAMILIES, Family, plan_batch, supported_summary
from .options import PatchOptions
from .patching import patch, unpatch
from .state import PatchState, PatchStats

__all__ = ["FAMILIES", "Family", "PatchOptions", "PatchState", "PatchStats", "explicit_layouts", "patch",
           "plan_batch", "supported_summary", "unpatch"]
