"""Production controls: policies, identities, client secrets, audit records.

Imports nothing of session, server, transports or storage: those compose it.
"""
