"""``callgate demo``: see cli.demo.run."""
