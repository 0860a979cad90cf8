"""Email templates: rendering for sending, explanations of mistakes, checks for validate.

- :mod:`worker.rendering.renderer`: the hot path, one email for one lead
  (:class:`Renderer`).
- :mod:`worker.rendering.explain`: a template error as a :class:`~worker.errors.Problem`
  with file, line and fix (used when a render fails and by ``nurture validate``).
- :mod:`worker.rendering.check`: every template check behind ``nurture validate``.
"""

from worker.rendering.renderer import (
    EMAIL_BLOCKS,
    LAYOUT,
    LAYOUT_BLOCKS,
    RenderedEmail,
    Renderer,
    TemplateRenderError,
    first_name,
    is_locale_dir,
)

__all__ = [
    "EMAIL_BLOCKS",
    "LAYOUT",
    "LAYOUT_BLOCKS",
    "RenderedEmail",
    "Renderer",
    "TemplateRenderError",
    "first_name",
    "is_locale_dir",
]
