"""What a Prefect work pool, worker and local server need to run koa."""
