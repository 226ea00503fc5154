from tests.support.fixtures import env, runtime, settings

__all__ = ["env", "runtime", "settings"]
