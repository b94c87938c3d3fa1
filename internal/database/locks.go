package database

// Advisory lock keys, in one place so that no two uses share one (a
// session-level lock and a transaction-level lock on the same key block
// each other). "prusage" and a byte.
const (
	// LockRollupLeader: the replica whose session holds it runs the rollup
	// worker's loops (Leader).
	LockRollupLeader int64 = 0x70727573_61676501
	// LockAlertLeader: the replica whose session holds it runs the alert
	// evaluator (Leader).
	LockAlertLeader int64 = 0x70727573_61676502
	// LockRollupFold and LockRollupPair: a rollup run's transaction holds
	// one while it consumes rows of the delta log or of the connection
	// log, so that no row is consumed twice.
	LockRollupFold int64 = 0x70727573_61676503
	LockRollupPair int64 = 0x70727573_61676504
	// LockMigrateJobs: held by a replica while it pauses TimescaleDB's
	// jobs, migrates and resumes them (applyPending), so that one replica
	// never resumes the jobs while another is still migrating.
	LockMigrateJobs int64 = 0x70727573_61676505
)
