"""Diagnostic and node-health checks of the executor.

Each target module (:mod:`.vm`, :mod:`.container`, :mod:`.network`,
:mod:`.host`, :mod:`.leftovers`) gathers evidence with injected sources and
evaluates it with pure functions. The executor calls :mod:`.runner`:
``run_diagnose(DiagnoseTarget, CheckSources)`` for ``Diagnose`` and
``run_health_checks(CheckSources)`` for ``GetHealth(include_checks)``, then
``model.to_proto`` for each result.
"""
