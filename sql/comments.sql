--
-- comments: every public function, aggregate, view and table of apicount has
-- a COMMENT, so that \df+, \dv+ and \dt+ explain it (issue 17).  Lists the
-- ones without: none is expected.
--
CREATE EXTENSION IF NOT EXISTS apicount;
SELECT 'function' AS kind, p.oid::regprocedure::text AS name
FROM pg_proc p
WHERE p.pronamespace = 'apicount'::regnamespace AND p.proname !~ '^_'
  AND obj_description(p.oid, 'pg_proc') IS NULL
UNION ALL
SELECT 'relation', c.oid::regclass::text
FROM pg_class c
WHERE c.relnamespace = 'apicount'::regnamespace AND c.relkind IN ('r', 'v')
  AND c.relname !~ '^_' AND obj_description(c.oid, 'pg_class') IS NULL
ORDER BY 1, 2;
-- and how many have one (the catalog query above must see them)
SELECT count(*) > 15 AS functions_commented
FROM pg_proc p
WHERE p.pronamespace = 'apicount'::regnamespace AND p.proname !~ '^_'
  AND obj_description(p.oid, 'pg_proc') IS NOT NULL;
