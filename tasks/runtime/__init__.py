"""The runtime the stages run on: the sandbox, the run folder, the LLM client, Prefect's database, artifacts,
the lifeline, the stage decorator and its caching, prompt-text layering and the literature client."""
