"""cnnlab: learn, test and explain convolutional networks in PyTorch, fast, on the machine you have.

Public API (the `cnnlab` command is a thin layer over it)::

    import cnnlab
    cfg = cnnlab.load_config("configs/course-cnn.yaml", {"train.epochs": 5})
    result = cnnlab.train(cfg)                 # writes a run directory, returns its summary
    cnnlab.evaluate(result.run_dir)            # test accuracy, per class, confusion matrix
    cnnlab.ablate("configs/course-task1.yaml") # a grid of runs and their comparison
    model = cnnlab.create_model("cnn4", batchnorm=True)
"""

import sys as _sys


def _run_as_command() -> bool:
    """`cnnlab ...` or `python -m cnnlab ...` (torchrun too), not an import in someone's script or notebook."""
    interpreter = getattr(_sys, "orig_argv", [])
    if "-m" in interpreter:
        return interpreter[interpreter.index("-m") + 1:][:1] == ["cnnlab"]
    first = _sys.argv[0] if _sys.argv else ""
    return first.replace("\\", "/").rsplit("/", 1)[-1] == "cnnlab"  # the console script


class _SigintDeferred:
    """While a command imports torch, numpy and matplotlib (seconds), Ctrl-C is noted, not raised: a
    KeyboardInterrupt inside a library's import can leave it half-initialized (a later import then fails
    with an unrelated traceback instead of one line). The imports finish, then the command stops with one
    line and exit code 130. Only for the `cnnlab` command: an import in a script or notebook is left alone."""

    def __enter__(self):
        import signal

        self.caught = False
        self.previous = None
        if _run_as_command() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            try:
                self.previous = signal.signal(signal.SIGINT, self._note)
            except ValueError:  # not the main thread
                self.previous = None
        return self

    def _note(self, signum, frame):
        self.caught = True

    def __exit__(self, kind, value, traceback):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if self.caught or (kind is KeyboardInterrupt and _run_as_command()):
            print("cnnlab: interrupted", file=_sys.stderr)
            raise SystemExit(130) from None
        return False


with _SigintDeferred():  # torch and friends take seconds to import: Ctrl-C here is still one line
    from .ablate import ablate
    from .classify import RunResult, evaluate, load_run_model, train
    from .config import Config
    from .config import resolve as load_config
    from .errors import UserError
    from .models import create as create_model
    from .models import list_models

__version__ = "0.1.0"

__all__ = ["Config", "RunResult", "UserError", "ablate", "create_model", "evaluate", "list_models",
           "load_config", "load_run_model", "train", "__version__"]
