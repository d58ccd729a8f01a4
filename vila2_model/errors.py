"""The model library's one exception. vila2_model never imports curator, so it cannot raise CuratorError;
ModelError carries the same three parts (what — why — how to fix) and the curator side re-raises it as one."""


class ModelError(ValueError):
    def __init__(self, what: str, why: str = "", fix: str = ""):
        self.what, self.why, self.fix = what, why, fix
        super().__init__(" — ".join(p for p in (what, why, fix) if p))


def require(module: str, extra: str, feature: str):
    """Import an optional (GPU) dependency or fail with the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ModelError(f"{feature} needs the '{module.split('.')[0]}' package",
                         f"it belongs to the '{extra}' extra, which is not installed",
                         f"pip install 'vila2-curator[{extra}]'") from e
