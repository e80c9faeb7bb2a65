-- The catalog (ARCHITECTURE.md §4): a tenant's services, the requests its
-- members make for them and the slots they book.
--
-- Every key leads with tenant_id, every table ENABLEs and FORCEs row-level
-- security with the standard tenant policy for task_app. Requests and
-- bookings reference their service through the compound foreign key
-- (tenant_id, service_id): a row of tenant A naming a service of tenant B
-- cannot be stored at all (the original plan's CHECK with a subquery, which
-- PostgreSQL rejects, is not needed). Foreign-key checks run as the table
-- owner, so row-level security does not hide the referenced row from them.
--
-- No two CONFIRMED bookings of one service overlap: an exclusion constraint
-- over (tenant, service, slot) holds it whatever the concurrency (btree_gist
-- lets `=` on uuid sit in a GiST index; it is a trusted extension, so the
-- database owner may create it). Slots are half-open, [start, end): back to
-- back does not overlap.
--
-- The platform role gets nothing here: no cross-tenant path reads the catalog.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE services (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    slug text NOT NULL CONSTRAINT services_slug_format CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    name text NOT NULL CONSTRAINT services_name_length CHECK (char_length(name) BETWEEN 1 AND 255),
    description text NOT NULL DEFAULT '' CONSTRAINT services_description_length CHECK (char_length(description) <= 10000),
    active boolean NOT NULL DEFAULT true,
    duration_minutes integer NOT NULL CONSTRAINT services_duration CHECK (duration_minutes BETWEEN 1 AND 1440),
    price_minor_units bigint NOT NULL DEFAULT 0 CONSTRAINT services_price CHECK (price_minor_units >= 0),
    currency_code text NOT NULL DEFAULT '' CONSTRAINT services_currency_format CHECK (currency_code ~ '^([A-Z]{3})?$'),
    version bigint NOT NULL DEFAULT 1,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    -- Unique per tenant: another tenant may use the same slug.
    CONSTRAINT services_slug_key UNIQUE (tenant_id, slug),
    CONSTRAINT services_priced_in_a_currency CHECK (price_minor_units = 0 OR currency_code <> '')
);
-- The active catalog, by slug (the key above serves the whole catalog).
CREATE INDEX services_active_by_slug ON services (tenant_id, slug) WHERE active;

CREATE TABLE service_requests (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    service_id uuid NOT NULL,
    requester_id uuid NOT NULL,
    details text NOT NULL DEFAULT '' CONSTRAINT service_requests_details_length CHECK (char_length(details) <= 10000),
    status text NOT NULL CONSTRAINT service_requests_status CHECK (status IN ('OPEN', 'IN_PROGRESS', 'DONE', 'CANCELLED')),
    version bigint NOT NULL DEFAULT 1,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT service_requests_service FOREIGN KEY (tenant_id, service_id)
        REFERENCES services (tenant_id, id)
);
-- Newest first (ids are UUID v7), per filter shape.
CREATE INDEX service_requests_by_service ON service_requests (tenant_id, service_id, id);
CREATE INDEX service_requests_by_status ON service_requests (tenant_id, status, id);
CREATE INDEX service_requests_by_service_status ON service_requests (tenant_id, service_id, status, id);

CREATE TABLE bookings (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    service_id uuid NOT NULL,
    booker_id uuid NOT NULL,
    start_time timestamptz NOT NULL,
    end_time timestamptz NOT NULL,
    status text NOT NULL CONSTRAINT bookings_status CHECK (status IN ('REQUESTED', 'CONFIRMED', 'CANCELLED')),
    version bigint NOT NULL DEFAULT 1,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    -- Bounded, so a range query can start its index scan 7 days early (an
    -- absolute length: the session's time zone and its DST do not count).
    CONSTRAINT bookings_slot CHECK (start_time < end_time AND end_time - start_time <= interval '7 days'),
    CONSTRAINT bookings_service FOREIGN KEY (tenant_id, service_id)
        REFERENCES services (tenant_id, id),
    CONSTRAINT bookings_no_overlap EXCLUDE USING gist (
        tenant_id WITH =,
        service_id WITH =,
        tstzrange(start_time, end_time) WITH &&
    ) WHERE (status = 'CONFIRMED')
);
CREATE INDEX bookings_by_start ON bookings (tenant_id, start_time, id);
CREATE INDEX bookings_by_service ON bookings (tenant_id, service_id, start_time, id);
CREATE INDEX bookings_by_status ON bookings (tenant_id, status, start_time, id);

ALTER TABLE services ENABLE ROW LEVEL SECURITY;
ALTER TABLE services FORCE ROW LEVEL SECURITY;
ALTER TABLE service_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE service_requests FORCE ROW LEVEL SECURITY;
ALTER TABLE bookings ENABLE ROW LEVEL SECURITY;
ALTER TABLE bookings FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON services TO task_app
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
CREATE POLICY tenant_isolation ON service_requests TO task_app
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
CREATE POLICY tenant_isolation ON bookings TO task_app
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));

-- Nothing is deleted: services are deactivated, requests and bookings closed.
-- Updates reach only the columns the API changes: keys, owners, slots and
-- create times are fixed once written.
GRANT SELECT, INSERT ON services, service_requests, bookings TO task_app;
GRANT UPDATE (slug, name, description, active, duration_minutes, price_minor_units,
              currency_code, version, update_time) ON services TO task_app;
GRANT UPDATE (details, status, version, update_time) ON service_requests TO task_app;
GRANT UPDATE (status, version, update_time) ON bookings TO task_app;
