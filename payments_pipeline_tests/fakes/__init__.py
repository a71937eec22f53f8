"""Fake provider APIs for the tests: localstripe on 127.0.0.1, a Stripe Events API of our own,
Monetbil's checkPayment. Each server binds 127.0.0.1 only and stops by itself."""
