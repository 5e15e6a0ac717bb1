from runner_helpers import toy_config  # noqa: F401  (the fixture, shared by the runner tests)
