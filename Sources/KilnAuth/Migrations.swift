import KilnStore

enum AuthMigrations {
    static var all: [Migration] { [v1, v2, v3] }
    static let v1 = Migration(
        module: "auth", version: 1, name: "users and setup tokens",
        sql: """
            CREATE TABLE users (
                id TEXT PRIMARY KEY,
                email TEXT NOT NULL UNIQUE COLLATE NOCASE,
                name TEXT NOT NULL,
                password_hash TEXT,
                email_verified INTEGER NOT NULL DEFAULT 0,
                is_owner INTEGER NOT NULL DEFAULT 0,
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            );
            CREATE TABLE setup_tokens (
                token_hash TEXT PRIMARY KEY,
                purpose TEXT NOT NULL CHECK (purpose IN ('owner', 'user')),
                user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
                created_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                used_at INTEGER
            );
            """)
}

extension AuthMigrations {
    static let v2 = Migration(
        module: "auth", version: 2, name: "sessions, email tokens, MFA, lockout, deletion",
        sql: """
            ALTER TABLE users ADD COLUMN avatar_url TEXT;
            ALTER TABLE users ADD COLUMN pending_email TEXT;
            ALTER TABLE users ADD COLUMN mfa_enabled INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE users ADD COLUMN mfa_secret BLOB;
            ALTER TABLE users ADD COLUMN mfa_pending_secret BLOB;
            ALTER TABLE users ADD COLUMN mfa_last_step INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE users ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE users ADD COLUMN locked_until INTEGER;
            ALTER TABLE users ADD COLUMN delete_after INTEGER;
            CREATE TABLE sessions (
                id TEXT PRIMARY KEY,
                token_hash TEXT NOT NULL UNIQUE,
                user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                csrf_token TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                last_seen_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                ip TEXT NOT NULL,
                user_agent TEXT NOT NULL,
                mfa_pending INTEGER NOT NULL,
                mfa_verified_at INTEGER,
                revoked_at INTEGER
            );
            CREATE INDEX sessions_by_user ON sessions (user_id);
            CREATE TABLE email_tokens (
                token_hash TEXT PRIMARY KEY,
                user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                purpose TEXT NOT NULL CHECK (purpose IN ('verify', 'reset')),
                email TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                used_at INTEGER
            );
            CREATE TABLE recovery_codes (
                user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                code_hash TEXT NOT NULL,
                used_at INTEGER,
                PRIMARY KEY (user_id, code_hash)
            );
            """)
}

extension AuthMigrations {
    /// Instance admins (the owner becomes the first), disabled accounts, who may run commands,
    /// invitations, and wrong-password counts per client address.
    static let v3 = Migration(
        module: "auth", version: 3, name: "instance admins, execution rights, invitations, lockout by address",
        sql: """
            ALTER TABLE users ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE users ADD COLUMN can_execute INTEGER NOT NULL DEFAULT 1;
            ALTER TABLE users ADD COLUMN disabled_at INTEGER;
            ALTER TABLE users ADD COLUMN registered_via TEXT;
            UPDATE users SET is_admin = 1 WHERE is_owner = 1;
            CREATE TABLE invitations (
                id TEXT PRIMARY KEY,
                token_hash TEXT NOT NULL UNIQUE,
                email TEXT NOT NULL COLLATE NOCASE,
                created_by TEXT REFERENCES users(id) ON DELETE SET NULL,
                created_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                used_at INTEGER,
                used_by TEXT
            );
            CREATE INDEX invitations_by_created ON invitations (created_at);
            CREATE TABLE login_failures (
                user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                ip TEXT NOT NULL,
                failed_at INTEGER NOT NULL
            );
            CREATE INDEX login_failures_by_user ON login_failures (user_id, failed_at);
            """)
}
