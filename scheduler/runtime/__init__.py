"""How the scheduler runs: assembled in one process (`app`), hosted as a Ray actor (`ray_host`)."""
