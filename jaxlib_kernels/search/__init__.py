"""The symbolic search library, owned by no template: what every offline search and the discovery engine share.

* :mod:`.trees`: operators on expression trees (paths, replacement, substitution);
* :mod:`.candidates`: a candidate and its mutation history;
* :mod:`.known`: the behaviours of everything already known (baselines, archived candidates), by name;
* :mod:`.offline`: the offline proposal loop (mutation, crossover, selection by a cheap proxy, diverse choice),
  seed pools, screening by real training, and idea rendering;
* :mod:`.language`: a *formula language* (:class:`~.language.FormulaLanguage`): variables, operators, mutations,
  plausibility and probe of one kind of elementwise plug-in; a template names one (``Template.discovery``);
* :mod:`.drift` (lpo's and marl's ``drift(ratio, advantage, progress)``) and :mod:`.preference` (dpo's
  ``preference_loss`` in ``z = beta rho``): the two languages.

The package imports nothing eagerly. The engine (:mod:`jaxlib_kernels.discovery`) uses :mod:`.trees` and
:mod:`.candidates` only (a language is passed to it), and :mod:`.offline` uses the engine (screening), so there is
no import cycle.
"""
