"""The FastAPI application and the wiring of settings into engines and sessions."""
