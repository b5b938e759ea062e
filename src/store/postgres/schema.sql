-- opsbot's PostgreSQL store ([store] type = "postgres"; docs/production.md).
-- opsbot applies it on start when its role may create these objects; a DBA
-- can apply it instead (`opsbot store schema | psql …`) and give the bot's
-- role only the grants in docs/production.md. Every statement is idempotent.

-- The audit trail. `record` holds each record exactly as sealed (its
-- SHA-256, then the JSON body that names the previous record's hash):
-- verification re-hashes these bytes. The other columns repeat what the body
-- says, for lookups.
CREATE TABLE IF NOT EXISTS opsbot_audit (
    seq        bigint PRIMARY KEY CHECK (seq > 0),
    ts         timestamptz NOT NULL,
    -- The previous record's hash (none for record 1, whose body names the
    -- genesis hash). Unique: a record has at most one successor, so two
    -- writers can never fork the chain.
    prev       text UNIQUE,
    hash       text NOT NULL,
    kind       text NOT NULL,
    service    text,
    request_id text,
    record     bytea NOT NULL,
    prev_seq   bigint GENERATED ALWAYS AS (seq - 1) STORED,
    CONSTRAINT opsbot_audit_record UNIQUE (seq, hash),
    -- Each record follows the one before it: record n names the hash of
    -- record n-1 (checked at the end of each statement, so a commit of many
    -- records is checked whole); record 1 follows none.
    CONSTRAINT opsbot_audit_chain FOREIGN KEY (prev_seq, prev) REFERENCES opsbot_audit (seq, hash),
    CONSTRAINT opsbot_audit_genesis CHECK ((seq = 1) = (prev IS NULL))
);
-- The leader's term when the record was written (see opsbot_leader).
ALTER TABLE opsbot_audit ADD COLUMN IF NOT EXISTS term bigint;
CREATE INDEX IF NOT EXISTS opsbot_audit_by_service ON opsbot_audit (service, seq);
CREATE INDEX IF NOT EXISTS opsbot_audit_by_request ON opsbot_audit (request_id, seq);

-- Append-only by construction: no UPDATE, DELETE or TRUNCATE, whoever asks
-- (the bot's role is not granted them either).
CREATE OR REPLACE FUNCTION opsbot_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'opsbot_audit is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE OR REPLACE TRIGGER opsbot_audit_no_change BEFORE UPDATE OR DELETE ON opsbot_audit
    FOR EACH ROW EXECUTE FUNCTION opsbot_audit_append_only();
CREATE OR REPLACE TRIGGER opsbot_audit_no_truncate BEFORE TRUNCATE ON opsbot_audit
    FOR EACH STATEMENT EXECUTE FUNCTION opsbot_audit_append_only();

-- Which replica leads, and its term: the replica holding the session
-- advisory lock takes the next term when it gets it, and every audit commit
-- checks the term is still its own (a deposed leader's late write is refused).
CREATE TABLE IF NOT EXISTS opsbot_leader (
    id     smallint PRIMARY KEY CHECK (id = 1),
    term   bigint NOT NULL,
    holder text NOT NULL,
    since  timestamptz NOT NULL
);
-- Where the leader takes requests (a standby forwards what reaches it).
ALTER TABLE opsbot_leader ADD COLUMN IF NOT EXISTS address text;

-- State besides the trail (the Store trait). Bodies are the same JSON the
-- sled store keeps.
CREATE SEQUENCE IF NOT EXISTS opsbot_request_ids;
CREATE SEQUENCE IF NOT EXISTS opsbot_incident_ids;
CREATE SEQUENCE IF NOT EXISTS opsbot_alert_ids;
CREATE TABLE IF NOT EXISTS opsbot_requests (
    id   text PRIMARY KEY,
    n    bigint NOT NULL,
    open boolean NOT NULL,
    body text NOT NULL
);
CREATE INDEX IF NOT EXISTS opsbot_requests_open ON opsbot_requests (n) WHERE open;
CREATE TABLE IF NOT EXISTS opsbot_run_locks (
    service    text PRIMARY KEY,
    request_id text NOT NULL,
    until      timestamptz NOT NULL,
    body       text NOT NULL
);
CREATE TABLE IF NOT EXISTS opsbot_holds (
    service text PRIMARY KEY,
    body    text NOT NULL
);
-- Delivery keys by the dedup window they were taken in.
CREATE TABLE IF NOT EXISTS opsbot_dedup (
    key    text NOT NULL,
    win    bigint NOT NULL,
    PRIMARY KEY (key, win)
);
CREATE INDEX IF NOT EXISTS opsbot_dedup_by_window ON opsbot_dedup (win);
CREATE TABLE IF NOT EXISTS opsbot_incidents (
    id   text PRIMARY KEY,
    n    bigint NOT NULL,
    open boolean NOT NULL,
    body text NOT NULL
);
CREATE TABLE IF NOT EXISTS opsbot_alerts (
    id   text PRIMARY KEY,
    body text NOT NULL
);
CREATE TABLE IF NOT EXISTS opsbot_alert_keys (
    key text PRIMARY KEY,
    id  text NOT NULL
);
CREATE TABLE IF NOT EXISTS opsbot_links (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Fencing for the state too: a connection that says which term it writes in
-- (SET opsbot.term; the leader's do) may change these tables only while that
-- term leads. The row lock orders the check against a new leader's term
-- (taken under the same row's update), so no write of a deposed leader's
-- lands after its successor began.
CREATE OR REPLACE FUNCTION opsbot_fenced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    mine text := current_setting('opsbot.term', true);
    led bigint;
BEGIN
    IF mine IS NOT NULL AND mine NOT IN ('', '0') THEN
        SELECT term INTO led FROM opsbot_leader WHERE id = 1 FOR SHARE;
        IF led IS DISTINCT FROM mine::bigint THEN
            RAISE EXCEPTION 'this replica led term %, but term % leads now: it writes no more', mine, led
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN NULL;
END $$;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['opsbot_requests', 'opsbot_run_locks', 'opsbot_holds', 'opsbot_dedup',
                             'opsbot_incidents', 'opsbot_alerts', 'opsbot_alert_keys', 'opsbot_links'] LOOP
        EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE ON %I
                        FOR EACH STATEMENT EXECUTE FUNCTION opsbot_fenced()', t || '_fenced', t);
    END LOOP;
END $$;
