"""The built-in methods, one folder each: `__init__.py` declares the method's parameters and
registers it (light), the implementation beside it is imported when a run builds it.

Registration metadata of every method: `access` (none / black / white / real_data), `data_free`,
`queries`, its default use of the query budget (K classes per API; q, iterations and per_class
are the estimator's, recoverer's and method's parameters), `reads` where a method never opens
the pool (its runs are then shared by scenarios with the same data), and the `search_space`
that `dfml-bench tune` searches (DomainBed style: 1-3 settings each; the default of each is the
tuned config's value; keys are config paths, see docs/tuning.md).
"""
