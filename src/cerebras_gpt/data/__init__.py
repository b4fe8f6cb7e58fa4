"""Data: corpora -> packed token shards (``prepare``), the shard format (``shards``), the ModelZoo HDF5
layout (``hdf5``), input readers (``sources``) and the batch loaders (``loader``).

Submodules import their heavy dependencies lazily; import what you need from them directly, e.g.
``from cerebras_gpt.data.loader import TokenWindowLoader``.
"""
