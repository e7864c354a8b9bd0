CREATE TABLE `repository_content` (
	`repository_id` integer NOT NULL,
	`digest` text NOT NULL,
	`recorded_at` integer NOT NULL,
	PRIMARY KEY(`repository_id`, `digest`),
	FOREIGN KEY (`repository_id`) REFERENCES `repositories`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
-- What a cache made before this table already knew: the digests its tags resolved to,
-- and each blob under the repository that introduced it.
INSERT OR IGNORE INTO `repository_content` (`repository_id`, `digest`, `recorded_at`) SELECT `repository_id`, `digest`, `resolved_at` FROM `tags`;--> statement-breakpoint
INSERT OR IGNORE INTO `repository_content` (`repository_id`, `digest`, `recorded_at`) SELECT `repositories`.`id`, `blobs`.`digest`, `blobs`.`created_at` FROM `blobs` JOIN `repositories` ON `repositories`.`upstream` = `blobs`.`upstream` AND `repositories`.`name` = `blobs`.`name`;
