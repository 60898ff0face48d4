"""What the numbers say: the audit and its statistics, the diagnosis, comparisons, checkpoint series, and
the 2-D maps (PCA, UMAP). Torch and numpy, no Qt; reads no files but through `rvq_viewer.io`."""
