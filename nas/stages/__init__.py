"""The jobs: each pipeline stage (reorder, train, search, quantize, analyze, export), the pipeline that runs
them in order, and the standalone evaluate and overview jobs. The entry points (`python -m nas.<job>`,
`nas-<job>`) only hand them Hydra's config; everything below them (the libraries) never imports them."""
