"""Prefect flows: thin wrappers that call koa_core, log, retry and report."""
