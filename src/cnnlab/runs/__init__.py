"""The run directory: the one contract between training, evaluation, ablations, reports and the web app.

    RUN_DIR/
      config.yaml        resolved config (reproduce with: cnnlab train --config RUN_DIR/config.yaml)
      environment.json   versions, hardware, threads, git commit, command line
      metrics.csv        a row per epoch
      summary.json       final numbers and provenance, typed (runs/summary.py; JSON Schema in
                         cnnlab/schemas/summary.schema.json): every file has `kind` and `schema_version`
      curves.png         accuracy and loss, train vs validation
      checkpoint.pt      full training state of the last finished epoch (resume)
      best.safetensors   weights with the best validation accuracy (last epoch when there is no validation),
                         with RunMeta (classes, input shape, normalization) in its metadata
      evaluation.json, confusion_matrix.png/.csv   from `cnnlab evaluate` (also run at the end of training)

- files.py: RunDir and the atomic writes every file goes through;
- summary.py: the typed summaries (one dataclass per kind of run), written and read there only;
- meta.py: RunMeta, the classifier metadata inside weights files;
- schema.py: summary.json's JSON Schema, generated from summary.py;
- provenance.py: git commit and environment.json.
"""

from .files import (BEST, CHECKPOINT, CONFIG, ENVIRONMENT, METRICS, SUMMARY, RunDir, atomic_write_bytes,
                    fsync_dir)
from .meta import RunMeta
from .provenance import environment, git_commit
from .summary import (KINDS, SCHEMA_VERSION, AblationSummary, ClassifierSummary, CourseSummary, EvaluateSummary,
                      StyleNetworkSummary, StylizeSummary, Summary, VisualizeSummary, read_summary,
                      try_read_summary, write_summary)

__all__ = ["BEST", "CHECKPOINT", "CONFIG", "ENVIRONMENT", "KINDS", "METRICS", "SCHEMA_VERSION", "SUMMARY",
           "AblationSummary", "ClassifierSummary", "CourseSummary", "EvaluateSummary", "RunDir", "RunMeta",
           "StyleNetworkSummary", "StylizeSummary", "Summary", "VisualizeSummary", "atomic_write_bytes",
           "environment", "fsync_dir", "git_commit", "read_summary", "try_read_summary", "write_summary"]
