from tests.support.fixtures import env, runtime, settings, store_kind

__all__ = ["env", "runtime", "settings", "store_kind"]
