"""``dxr-node screen``: screen a whole archive (folders or a DICOMweb PACS) on a Dask cluster.

* :mod:`node.screen.verbs` - the verb, its arguments and checks (light imports);
* :mod:`node.screen.sources` - the inputs: files/folders, or QIDO-RS on the PACS;
* :mod:`node.screen.worker` - on each Dask worker: the plugin (numba kernels, reference set)
  and the per-image task (file read or WADO-RS fetch, then ``dxr-node analyze``'s analysis);
* :mod:`node.screen.results` - the Parquet dataset: schema, batched writer, keys already done;
* :mod:`node.screen.summary` - counts, T-score distribution, ``followup.csv``;
* :mod:`node.screen.run` - the client: cluster, bounded task window, progress.
"""
