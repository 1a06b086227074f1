"""The Open X-Embodiment registry: dataset specs (`datasets.yaml`, loaded by `prismatic.data.spec`) and
named mixtures (`mixtures.py`)."""
