//! Contract test suites.
