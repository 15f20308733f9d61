"""Production controls: credentials, policies, client secrets, usage, audit records and the
state replicas share.

Imports nothing of session, server, transports or storage: those compose it.
"""
