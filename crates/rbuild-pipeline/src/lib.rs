//! GitLab CI pipeline model, planner and runner
