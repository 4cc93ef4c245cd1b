"""The application layer: what takes paths, devices and run directories, for the CLI and the API.

- :mod:`.runs`: loading what runs leave on disk (encoders, methods, classifier files, config
  records) and the datasets evaluation reads, at a run's image size and normalization;
- :mod:`.pretrain`: a run directory from a config (with resume and the kNN monitor), and the demo;
- :mod:`.evaluate`: the evaluation protocols from weights on disk (``selfsup knn/linear/finetune/
  distill/embed/export``), as JSON-ready dicts;
- :mod:`.report`: ``selfsup report``'s plots and summary.

Everything here is built from :mod:`selfsup.eval`, :mod:`selfsup.train` and :mod:`selfsup.data`,
which know nothing of files or devices; nothing below imports this package.
"""
