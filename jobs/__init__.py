"""RQ job functions: they take ids, call services and enqueue what comes next."""
