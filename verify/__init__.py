"""``kafkastore verify``: a history recorder, a pure checker and fault schedules (issue 13).

:mod:`verify.history` records every operation (invoke / ok / fail / unknown) and every
observation as JSON lines; :mod:`verify.checker` turns a history into a verdict;
:mod:`verify.nemesis` is the interface faults plug into and :mod:`verify.schedule` runs a
workload against a sequence of them.
"""
