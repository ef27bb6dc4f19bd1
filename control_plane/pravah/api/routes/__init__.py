"""One router per resource: jobs, config, health."""
