SELECT b
  FROM (SELECT g AT TIME ZONE $3::text AS b
          FROM generate_series(date_trunc($4::text, $1::timestamptz AT TIME ZONE $3::text),
                               $2::timestamptz AT TIME ZONE $3::text,
                               ('1 ' || $4::text)::interval) AS g) AS s
 WHERE b < $2::timestamptz
 LIMIT $5
