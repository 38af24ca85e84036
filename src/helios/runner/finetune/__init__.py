"""Fine-tuning window preparation: Studio annotation exports -> labeled windows with splits.

See docs/runner.md, "Fine-tuning: window preparation". `prepare_labeled_windows(project,
scratch)` reads the export (`annotations`), samples tasks (`samplers`), turns each into
labeled windows (`preparers`), assigns splits (`splitters`) and writes them where
`build_dataset` and `load_window_inputs` work on them unchanged (`prepare`).
"""

from helios.runner.finetune.annotations import (
    Annotation,
    AnnotationError,
    AnnotationSet,
    AnnotationTask,
    Problem,
    load_annotations,
)
from helios.runner.finetune.config import WindowPrep, WindowPrepError, parse_window_prep
from helios.runner.finetune.prepare import (
    PreparedWindows,
    labeled_root,
    list_labeled_windows,
    load_labeled_window,
    prepare_labeled_windows,
    write_labeled_windows,
)
from helios.runner.finetune.preparers import (
    BUILTIN_PREPARERS,
    LabeledWindow,
    LabeledWindowPreparer,
    PointToPixelWindowPreparer,
    PointToRasterWindowPreparer,
    PolygonToRasterWindowPreparer,
)
from helios.runner.finetune.samplers import (
    BUILTIN_SAMPLERS,
    ChooseNSampler,
    NoopSampler,
    Sampler,
)
from helios.runner.finetune.splitters import (
    BUILTIN_SPLITTERS,
    DataSplitter,
    RandomDataSplitter,
    SpatialDataSplitter,
)

__all__ = [
    "BUILTIN_PREPARERS",
    "BUILTIN_SAMPLERS",
    "BUILTIN_SPLITTERS",
    "Annotation",
    "AnnotationError",
    "AnnotationSet",
    "AnnotationTask",
    "ChooseNSampler",
    "DataSplitter",
    "LabeledWindow",
    "LabeledWindowPreparer",
    "NoopSampler",
    "PointToPixelWindowPreparer",
    "PointToRasterWindowPreparer",
    "PolygonToRasterWindowPreparer",
    "PreparedWindows",
    "Problem",
    "RandomDataSplitter",
    "Sampler",
    "SpatialDataSplitter",
    "WindowPrep",
    "WindowPrepError",
    "labeled_root",
    "list_labeled_windows",
    "load_annotations",
    "load_labeled_window",
    "parse_window_prep",
    "prepare_labeled_windows",
    "write_labeled_windows",
]
