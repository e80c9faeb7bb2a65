DROP TABLE member_removals;
ALTER TABLE tasks DROP COLUMN assignee_member_since;
