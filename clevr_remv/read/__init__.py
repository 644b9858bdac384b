"""Reading a finished dataset in training code: ``Reader`` and ``RefexpDataset`` (re-exported by
``clevr_remv.data``), through the format definition.  Imports ``store``; never rendering."""
