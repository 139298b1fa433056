"""A local stand-in for Manychat, for development, demos, tests and benchmarks.

Never install it in production: it hands out tokens to anyone who asks
(system check ``manychat_oauth.W003`` says so when ``DEBUG`` is off).
"""
