"""Production controls: credentials, policies, usage, audit and the state replicas share."""
