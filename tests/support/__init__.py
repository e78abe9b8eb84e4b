"""Helpers shared by every test package: unique names, real services, service subprocesses."""

from tests.support.names import unique
from tests.support.process import ServiceProcess, settings_environment

__all__ = ["ServiceProcess", "settings_environment", "unique"]
