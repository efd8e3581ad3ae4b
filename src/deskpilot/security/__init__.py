"""Security primitives: password hashing, API tokens, secret encryption, signed cookies, CSRF."""
