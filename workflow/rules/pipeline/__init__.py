"""What the workflow needs besides its rules, beside them (Snakemake puts this folder on the import path): the
config check (``config``), the binding of a rule to its stage (``binding``), the dataset's part in the rerun
plan (``dataset``) and the warnings shown at the end of a run (``run_end``). The stages never import it."""
