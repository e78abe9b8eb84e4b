"""The test suite. Every directory under tests/ is a package (has ``__init__.py``) so test modules
import as ``tests.<pkg>.test_x`` and never shadow the real ``kafkastore``/``writer``/… packages."""
