-- Attribute orphaned calls and journal each attribution, in one statement (one transaction).
-- Only calls still without an organization are touched: one attributed meanwhile (by the app
-- or a person) is left as it is and not journalled.
-- Fenced: written only while backend $6 holds lock $5 (reconciler.holds_lock).
-- $1 uuid[] call ids, $2 uuid[] organization ids, $3 text[] rules, $4 uuid run id,
-- $5 bigint lock key, $6 integer lock backend pid
WITH wanted AS (
  SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS w(call_id, org_id, rule)
),
attributed AS (
  UPDATE public.calls c
     SET organization_id = w.org_id
    FROM wanted w
   WHERE c.id = w.call_id
     AND c.organization_id IS NULL
     AND (SELECT reconciler.holds_lock($5, $6))
  RETURNING c.id, c.user_id, w.org_id, w.rule
)
INSERT INTO reconciler.call_repairs
       (run_id, call_id, user_id, old_organization_id, new_organization_id, rule)
SELECT $4, a.id, a.user_id, NULL, a.org_id, a.rule
  FROM attributed a
RETURNING call_id
