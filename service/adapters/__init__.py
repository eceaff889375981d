"""Adapters to the outside: the OpenAI gateway, the token store, the database."""
