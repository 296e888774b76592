//! `qbd`: verify, repair, dedupe, inspect. Arrives with the verify/repair issue.
