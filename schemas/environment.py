"""The prefix of every setting's environment variable: `LOOKCLOSER_<NAME>` (flows' Settings reads them,
annotation's and training's one-line errors name them)."""

ENV_PREFIX = "LOOKCLOSER_"
