"""The bottom layer: the vocabulary every other package shares, importing none of them.

``Artifact``/``InputSpec`` (artifact.py), the error taxonomy (errors.py), atomic I/O (io.py), torch graph helpers
(graph.py, standalone_bn.py), the op vocabulary artifact readers and the linter share (ops.py), host facts
(environment.py) and strict config models with one error formatter (validation.py). The import-linter contracts
in pyproject.toml keep it that way.
"""
