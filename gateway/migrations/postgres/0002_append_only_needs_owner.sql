-- The append-only guard of 0001 let any role that could write rows rewrite them by setting
-- `namegate.migration = 'on'`, a custom setting any session may set. Now the controlled path is open only
-- to roles that hold the table owner's privileges (the owner, members of the owning role, superusers):
-- exactly those who could disable the trigger anyway. A role with INSERT/UPDATE/DELETE grants but not
-- ownership is refused whatever it sets. See docs/audit.md, "Append-only".
CREATE OR REPLACE FUNCTION namegate_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('namegate.migration', true) = 'on'
       AND pg_has_role(current_user,
                       (SELECT relowner FROM pg_class WHERE oid = TG_RELID),
                       'USAGE') THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'only the table owner may rewrite audit rows, through the correlation-ID migration';
END;
$$;
