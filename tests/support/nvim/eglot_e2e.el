;;; eglot_e2e.el --- drive the editors/README.md eglot snippets against the real server -*- lexical-binding: t -*-

;; Run by tests/test_nvim.py: emacs --batch -l eglot_e2e.el, with HANDOFF_EL_SNIPPETS (the README's
;; elisp blocks), HANDOFF_TEST_FILE, HANDOFF_TEST_OUT (JSON result) and handoff-lsp on PATH.
;; Delegates lines 1-2 with an instruction, waits for the mode line to say running then ready,
;; applies with `handoff-apply' and records the buffer. Waits on conditions only.

(package-initialize)
(require 'eglot)
(require 'python)
(require 'json)

(setq eglot-confirm-server-initiated-edits nil)

(defvar e2e-statuses nil "Distinct mode-line texts seen, newest first.")
(defvar e2e-result (list :ok :json-false))

(defun e2e-wait (what pred)
  "Process events until PRED is non-nil; fail after 60 s naming WHAT."
  (let ((deadline (+ (float-time) 60)))
    (while (and (not (funcall pred)) (< (float-time) deadline))
      (unless (equal handoff-mode-line (car e2e-statuses))
        (push handoff-mode-line e2e-statuses))
      (accept-process-output nil 0.05))
    (unless (funcall pred)
      (error "Timed out waiting for %s" what))))

(defun e2e-write ()
  (with-temp-file (getenv "HANDOFF_TEST_OUT")
    (insert (json-encode
             (append e2e-result
                     (list :statuses (vconcat (reverse e2e-statuses))
                           :messages (with-current-buffer "*Messages*" (buffer-string))))))))

(condition-case err
    (progn
      (load (getenv "HANDOFF_EL_SNIPPETS") nil t)
      (find-file (getenv "HANDOFF_TEST_FILE"))
      (apply #'eglot (eglot--guess-contact))
      (e2e-wait "eglot to connect" (lambda () (eglot-current-server)))
      (handoff-delegate (point-min)
                        (save-excursion (goto-char (point-min)) (line-end-position 2))
                        "add a comment")
      (e2e-wait "running" (lambda () (string-match-p "running" handoff-mode-line)))
      (e2e-wait "ready" (lambda () (string-match-p "1 ready" handoff-mode-line)))
      (setq e2e-result (plist-put e2e-result :statusReady handoff-mode-line))
      (handoff-apply)
      (setq e2e-result (plist-put e2e-result :buffer
                                  (buffer-substring-no-properties (point-min) (point-max))))
      (setq e2e-result (plist-put e2e-result :ok t)))
  (error (setq e2e-result (plist-put e2e-result :error (error-message-string err)))))

(e2e-write)
(kill-emacs 0)
