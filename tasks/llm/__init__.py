"""The LLM stages, one module per stage beside the offline one of the same name in ``tasks/`` (after The AI
Scientist, Lu et al., 2024). This package holds the stages; the LLM *client* they all call (litellm, budget,
retries, the ``prompts/llm/`` renderer) is :mod:`tasks.runtime.llm`.

ideation (JSON ideas, reflection rounds with an early stop, the archive and its review scores in the prompt) ->
novelty (the model writes queries; :mod:`tasks.runtime.literature` searches Semantic Scholar / OpenAlex, or the
local index; at most N rounds; a decision with its reason) -> codegen (the model writes the plug-in; the validation
gate's reason goes back for a fixed number of repair rounds) -> writeup (section by section from the measured
results and the figures' captions; citations only of papers the literature client returned or of references.bib;
a LaTeX repair round; the offline text as the last resort, so a run never ends without a PDF because of the model's
LaTeX) -> review (NeurIPS form, reflections, an ensemble and an area chair's meta-review; Decision = Overall >= 6;
the evidence checks are given to the model and kept beside its review); discovery (expression trees proposed for
the discovery engine). Prompts are the Jinja2 files of ``prompts/llm/``, generic over the template contract and
overridden file by file in ``prompts/templates/<name>/llm/`` (:mod:`tasks.runtime.text`); the task description is
the template's ``llm/task.md`` (:mod:`tasks.llm.prompting`). Each stage module ends with its ``@stage``.

Sizes (environment): ``SCIENTIST_IDEA_REFLECTIONS`` (2), ``SCIENTIST_NOVELTY_ROUNDS`` (3),
``SCIENTIST_CODE_REPAIR_ROUNDS`` (2: three attempts in all), ``SCIENTIST_NUM_REVIEWS`` (3),
``SCIENTIST_REVIEW_REFLECTIONS`` (1).
"""
